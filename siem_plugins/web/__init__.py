"""The settings server (``siem-plugins serve``): the API (``/api/v1``) and the page
(Settings > Integrations > SIEM Integration), on the control plane of
:mod:`siem_plugins.control`. Needs the ``server`` extra (FastAPI, uvicorn, Jinja2)."""
