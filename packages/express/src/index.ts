export { type KosExpressMiddleware, type KosMiddlewareOptions, kosMiddleware } from './kos-middleware.js';
