"""HTTP routes, one concern per module; `app.create_app` includes every router listed in `ROUTERS`."""
