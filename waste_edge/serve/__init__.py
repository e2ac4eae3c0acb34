"""`waste-edge serve`: the long-running service at the bin (ARCHITECTURE.md: builds on `waste_edge.runtime` only).

One process, one model (`model_holder.ModelHolder`), N frame sources (`camera_worker.CameraWorker`), their
frames batched into shared inference calls (`batcher.InferenceBatcher`); a FastAPI app (`app.create_app`)
whose routes live one concern per module in `routes/`; MQTT events (`mqtt`), Prometheus metrics (`metrics`),
and the process lifecycle (`server.run_server`). Needs the `[serve]` extra.
"""
