"""The HTTP transport: signed partner webhooks, health and metrics, the admin API.

Thin on purpose: routes authenticate, read and check the request, and call the
gate (the webhook), the registry and the audited reads of `store`, or `rights`;
no SQL and no driver here. The modules, top to bottom (each imports only the
ones below it; `lint-imports` checks this):

- `server`: `vitals serve` (uvicorn, TLS, the separate admin listener, drain on SIGTERM);
- `app`: `create_app(settings)`, the lifespan (pool, coalescing writer, provider cache);
- `routes/*` (one module per noun), `webhook`, `middleware`;
- `deps`: the `Runtime`, roles and the request's transaction, as typed dependencies;
- `errors`, `models`, `signatures`: error bodies and handlers, request and
  response bodies, the `Vitals-Signature` HMAC and the provider secret cache.

    app = create_app(Settings())        # refuses a placeholder VITALS_SECRET_KEY
    uvicorn.run(app)                    # or: vitals serve --port 8080
"""
