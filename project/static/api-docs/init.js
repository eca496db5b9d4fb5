// Renders the OpenAPI document named by #swagger-ui's data-schema-url (see api_docs.html).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-schema-url"),
    domNode: root,
    deepLinking: true,
    // The default validator is a remote service: nothing on this page leaves this host.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
