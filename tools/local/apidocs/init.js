// make run's docs page (tools/local/apidocs.py). A file rather than an inline script, so the
// page's Content-Security-Policy can allow scripts from this server only.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Reading only: the gateway is another origin and sends no CORS headers, so requests from
    // the page would fail; the document's servers entry says where curl goes.
    supportedSubmitMethods: [],
    // The online validator's badge would send the document to another host.
    validatorUrl: null,
  });
});
