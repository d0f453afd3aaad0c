"""HTTP pieces every role serves with: the HDF5-REST view of ``publish`` (``h5dict``,
``h5types``) and uvicorn in a thread (``server``)."""
