// Typeset the derivation's formulas (arithmatex's \( \) and \[ \]) and the notebook's Markdown
// cells ($ and $$, as Jupyter writes them); nothing else on a page is read as TeX.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
  },
  // every element with a class is skipped unless it is one of these; unclassed ones inherit
  options: { ignoreHtmlClass: ".+", processHtmlClass: "arithmatex|jp-RenderedMarkdown" },
  svg: { fontCache: "global" },
};
document$.subscribe(() => { MathJax.typesetPromise(); });
