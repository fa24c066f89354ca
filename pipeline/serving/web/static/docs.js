// The API docs page: Swagger UI over the app's own OpenAPI document. A file, not an inline script, so that the
// page passes the app's Content-Security-Policy like every other.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,  // no call to swagger.io's validator
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
