"""Lambda's SQS event source mapping: ``QueuePoller`` drains one consumer's queue (fed by a rule
on the bus) and invokes the consumer. A message is deleted only when the handler did not name it
as failed. SQS batch windows and batches larger than ten messages do not exist here (one
``ReceiveMessage`` of at most ten is one invocation).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from tools.local.events.broker import queue_arn
from tools.local.events.lambda_events import Function, failed_items, sqs_record
from tools.local.events.poller import Poller, Say
from tools.topology import Subscription

# SQS long poll: an answer as soon as a message arrives, at most this long a call otherwise.
QUEUE_WAIT_SECONDS = 1
SQS_MAX_MESSAGES = 10  # ReceiveMessage's limit; a larger batch_size is read as ten


class QueuePoller(Poller):
    """Lambda's SQS event source mapping for one subscription.

    Long-polls the queue (``WaitTimeSeconds`` 1), invokes the consumer with up to ten messages,
    then deletes every message the answer does not name in ``batchItemFailures``. A handler
    exception or a malformed answer deletes nothing. What is not deleted comes back after the
    queue's visibility timeout, and after ``maxReceiveCount`` receives SQS itself (moto's
    redrive, as AWS's) moves it to the dead-letter queue: the poller never counts.
    """

    def __init__(
        self,
        subscription: Subscription,
        function: Function,
        *,
        stage: str,
        sqs: Any,
        say: Say,
        wait_seconds: int = QUEUE_WAIT_SECONDS,
    ) -> None:
        super().__init__(subscription.handler, say)
        self.subscription = subscription
        self.function = function
        self.stage = stage
        self.sqs = sqs
        self.wait_seconds = wait_seconds
        self.url: str | None = None
        self.arn = ""

    def idle_seconds(self) -> float:
        return 0.0  # the long poll itself waited

    def _resolve(self) -> str:
        if self.url is None:
            url = str(
                self.sqs.get_queue_url(QueueName=self.subscription.queue_name(self.stage))[
                    "QueueUrl"
                ]
            )
            self.arn = queue_arn(self.sqs, url)
            self.url = url
        return self.url

    def poll_once(self) -> bool:
        url = self._resolve()
        try:
            received = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(self.subscription.batch_size, SQS_MAX_MESSAGES),
                WaitTimeSeconds=self.wait_seconds,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except Exception:
            self.url = None  # a restarted endpoint has new queue URLs, maybe: look again
            raise
        messages = received.get("Messages", [])
        if not messages:
            return False
        ids = [str(m["MessageId"]) for m in messages]
        keep = self._invoke([sqs_record(m, self.arn) for m in messages], ids)
        done = [m for m in messages if m["MessageId"] not in keep]
        self._delete(url, done)
        if keep:
            timeout = self.subscription.local_visibility_timeout_seconds
            self.say(
                f"{self.name}: {len(keep)} of {len(messages)} message(s) failed; they come back "
                f"after the visibility timeout ({timeout} s), and go to the dead-letter queue "
                f"after {self.subscription.max_receive_count} receives"
            )
        return True

    def _invoke(self, records: list[dict[str, Any]], ids: list[str]) -> set[str]:
        """Invoke the consumer; return the message ids to keep (the failed ones)."""
        try:
            answer = self.function({"Records": records})
        except Exception:
            self.say(f"{self.name}: the handler raised; no message of the batch is deleted")
            for line in traceback.format_exc().rstrip().splitlines():
                self.say(f"  {line}")
            return set(ids)
        failed = failed_items(answer, ids)
        if failed is None:
            self.say(f"{self.name}: malformed batchItemFailures answer; nothing is deleted")
            return set(ids)
        return set(failed)

    def _delete(self, url: str, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_MAX_MESSAGES):
            chunk = messages[start : start + SQS_MAX_MESSAGES]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            answer = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            for failure in answer.get("Failed", []):
                # The message comes back after its visibility timeout and is applied again,
                # which the consumer recognises by its event id.
                self.say(f"{self.name}: could not delete a handled message: {failure.get('Code')}")
