/* Runs after require.js and before embed-amd.js on pages that show saved widget state (_config.yml).
 *
 * 1. Fonts. embed-amd.js finds its Font Awesome files (button icons) next to the module URL that
 *    RequireJS derives from the module name, which is relative to the page ("notebooks/@jupyter-widgets/...")
 *    and does not exist. Mapping the names to this folder makes the fonts load from here.
 * 2. MathJax. The widgets typeset their labels with the MathJax 2 call
 *    MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]), but the book's pages load MathJax 3,
 *    which has no Hub: every slider threw "Cannot read properties of undefined (reading 'Queue')" and was
 *    drawn without its handle and value. Whatever window.MathJax holds (the page's MathJax
 *    configuration, then MathJax 3 itself) gets a Hub.Queue that hands the element to MathJax 3.
 */
(function () {
  "use strict";
  var src = document.currentScript && document.currentScript.src;
  if (src && typeof window.require === "function" && typeof window.require.config === "function") {
    var here = src.slice(0, src.lastIndexOf("/"));
    window.require.config({paths: {"@jupyter-widgets/html-manager/dist": here, "@jupyter-widgets": here}});
  }

  function queue(job) {
    var element = Array.isArray(job) ? job[2] : undefined;
    var mathjax = current;
    if (!element || !mathjax || typeof mathjax.typesetPromise !== "function") {
      return;  // MathJax 3 not loaded (yet): its start-up pass typesets the page, widgets included
    }
    var ready = mathjax.startup && mathjax.startup.promise ? mathjax.startup.promise : Promise.resolve();
    ready.then(function () { return mathjax.typesetPromise([element]); }).catch(function (err) {
      console.warn("MathJax could not typeset a widget label:", err);
    });
  }

  function withHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && !mathjax.Hub) {
      // not enumerable, so that MathJax 3 does not read it as a configuration block
      Object.defineProperty(mathjax, "Hub", {value: {Queue: queue}, configurable: true, writable: true});
    }
    return mathjax;
  }

  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    enumerable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); }
  });
})();
