export {
  type KosHonoMiddleware,
  type KosMiddlewareOptions,
  type KosVariables,
  kosMiddleware,
} from './kos-middleware.js';
