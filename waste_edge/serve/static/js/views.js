// The page's views, in tab order. A view is a module exporting
// { id, title, mount(root, ctx), unmount() } (see live.js); add one here to add a tab.
import live from './live.js';
import review from './review.js';

export const VIEWS = [live, review];
