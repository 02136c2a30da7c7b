"""siem-plugins-example: a third-party plugin package for siem-plugins (the ``csv``
formatter). The plugin itself lives in :mod:`siem_example.plugin`."""

__version__ = "0.1.0"
