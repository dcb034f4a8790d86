// Starts Swagger UI (static/vendor/swagger-ui/) on /api/docs over this gateway's OpenAPI
// document. A file rather than an inline script: the page's Content-Security-Policy allows
// scripts from this origin only.
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    // Offline: never send the document to validator.swagger.io for a badge.
    validatorUrl: null,
    // "Try it out" answers show how long the gateway took.
    displayRequestDuration: true,
  });
})();
