"""The runtime every role shares, and which imports no role.

* ``service``: the ``Service`` base (Redis, liveness, controller updates, parameters, logs);
* ``commands``: the queue other threads post commands to a data thread through;
* ``assignments``: the reader of a scan's assignment stream (ingester and worker);
* ``settings``: the settings of every component, from the environment;
* ``redis_messages``: the Redis keys and the messages written to them;
* ``dataplane``: the ZeroMQ messages between ingesters, workers and the reducer;
* ``tick``: the tick clock of ``process_event(event, parameters, tick)``, local or shared;
* ``heap``: malloc and garbage-collector settings for processes that move large frames;
* ``usercode``: the hosting of user classes (workers, reducers, their parameters).
"""
