export { type KosKoaMiddleware, type KosMiddlewareOptions, type KosState, kosMiddleware } from './kos-middleware.js';
