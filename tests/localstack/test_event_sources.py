"""An SQS event source mapping on host-mode LocalStack delivers messages to a host function."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.localstack.helpers import wait_for

pytestmark = pytest.mark.localstack

CONSUMER = '''
import os
import boto3

def handler(event, context):
    table = boto3.client("dynamodb")
    for record in event["Records"]:
        print("consumed", record["messageId"])
        table.put_item(
            TableName=os.environ["TABLE"],
            Item={"pk": {"S": record["body"]}, "source": {"S": record["eventSource"]}},
        )
    return {"batchItemFailures": []}
'''


def test_an_sqs_event_source_mapping_invokes_the_function(stack, deploy) -> None:
    suffix = uuid.uuid4().hex[:8]
    dynamodb, sqs, lambda_client = stack.client("dynamodb"), stack.client("sqs"), stack.client(
        "lambda"
    )
    table = f"consumed-{suffix}"
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue_url = sqs.create_queue(QueueName=f"events-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    name = deploy(CONSUMER, environment={"TABLE": table})
    mapping = lambda_client.create_event_source_mapping(
        EventSourceArn=queue_arn, FunctionName=name, BatchSize=1
    )
    try:
        wait_for(
            lambda: lambda_client.get_event_source_mapping(UUID=mapping["UUID"])["State"]
            == "Enabled",
            timeout=60,
        )
        body = json.dumps({"order": suffix})
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

        item = wait_for(
            lambda: dynamodb.get_item(TableName=table, Key={"pk": {"S": body}}).get("Item"),
            timeout=60,
        )
        assert item["source"] == {"S": "aws:sqs"}
        # Consumed, so deleted from the queue.
        counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        wait_for(
            lambda: sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=counts)[
                "Attributes"
            ]
            == dict.fromkeys(counts, "0"),
            timeout=30,
        )
    finally:
        lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])
