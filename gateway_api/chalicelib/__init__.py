"""gateway_api's own code: calling the services it fronts. Shared code lives in svckit."""
