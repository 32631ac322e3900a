"""The local runtime behind ``make run``, one concern per module.

* ``process``: one child process (its own group, its output kept and passed on, dies with us);
* ``printer``: ``[name] line`` output shared by every child;
* ``dynamodb``: the database engine (AWS's DynamoDB Local, moto's server as the fallback),
  its installation from the npm registry and the tables from ``resources.json``;
* ``supervisor``: restarts with backoff, crash-loop detection, orderly stop;
* ``reload``: file watching that maps a change to the services it touches.

``tools.localrun`` puts them together. Nothing here knows a route or a business rule: the apps
run exactly as Chalice runs them, so local and deployed behaviour cannot drift apart.
"""
