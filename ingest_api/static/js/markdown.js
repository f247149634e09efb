// A reply's Markdown as safe HTML. A reply is model output, and a model can be made to write
// anything: with `html: false` markdown-it shows raw HTML (a <script>, an <img onerror=...>) as
// text instead of parsing it, and its link validation refuses javascript:, vbscript:, file: and
// non-image data: URLs. The page's Content-Security-Policy is the second line of defence.

import markdownit from "../vendor/markdown-it/markdown-it.esm.min.mjs";

const md = markdownit({ html: false, linkify: true, breaks: true });

const renderLinkOpen = md.renderer.rules.link_open ?? ((tokens, i, options, env, self) => self.renderToken(tokens, i, options));
md.renderer.rules.link_open = (tokens, i, options, env, self) => {
  tokens[i].attrSet("target", "_blank"); // a link never navigates the chat away
  tokens[i].attrSet("rel", "noopener noreferrer");
  return renderLinkOpen(tokens, i, options, env, self);
};

export function renderMarkdown(text) {
  return md.render(text);
}
