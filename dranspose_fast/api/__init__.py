"""HTTP routes: the HDF5-REST partial view of ``publish`` and the controller's REST API."""
