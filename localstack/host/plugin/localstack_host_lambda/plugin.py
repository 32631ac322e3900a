"""The plux plugin LocalStack loads when ``LAMBDA_RUNTIME_EXECUTOR=local``.

LocalStack's ``get_runtime_executor()`` looks the name up in the
``localstack.lambda.runtime_executor`` namespace; this package's entry point registers it there.
The executor module is imported only on ``load()``, as LocalStack's own Docker plugin does, so
listing plugins stays cheap.
"""

from __future__ import annotations

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    """``LAMBDA_RUNTIME_EXECUTOR=local``: see ``executor.HostRuntimeExecutor``."""

    name = "local"

    def load(self, *args: object, **kwargs: object) -> type:
        from localstack_host_lambda.executor import HostRuntimeExecutor

        return HostRuntimeExecutor
