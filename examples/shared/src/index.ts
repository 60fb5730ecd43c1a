export { type BrowserAssets, browserAssets } from './browser-assets.js';
export { printInstructions } from './instructions.js';
