"""`waste-edge serve`: the long-running service at the bin (ARCHITECTURE.md: builds on `waste_edge.runtime` only).

One process, one model (`model_holder.ModelHolder`), N frame sources (`camera_worker.CameraWorker`), their
frames batched into shared inference calls (`batcher.InferenceBatcher`); a FastAPI app (`app.create_app`)
whose routes live one concern per module in `routes/`; MQTT events (`mqtt`), Prometheus metrics (`metrics`),
and the process lifecycle (`server.run_server`). Needs the `[serve]` extra.

Every request is hostile: `connections` (head / body deadlines, stalled writes, a connection cap, under
uvicorn), `request_guard` (Host, cross-site writes, body limits, no tracebacks), `bodies` (pydantic request
models), `names` and `catalogue` (client names -> files of the collection and models folders, never paths),
`limits` (the flags' snapshot), `logs` (one rate-limited line per event kind), `auth` (the token's sources).
"""
