"""Which URL reaches a REST API (Lambda proxy integration) on host-mode LocalStack without DNS.

LocalStack documents ``<api-id>.execute-api.localhost.localstack.cloud:4566/<stage>/<path>``,
a public DNS name that does not resolve on an offline machine. Two forms need only
``127.0.0.1``; both are checked, so a LocalStack upgrade that drops one shows up here:

* ``http://127.0.0.1:<port>/_aws/execute-api/<api-id>/<stage>/<path>`` (the current form)
* ``http://127.0.0.1:<port>/restapis/<api-id>/<stage>/_user_request_/<path>`` (the legacy form)
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.localstack.helpers import ACCOUNT, REGION

pytestmark = pytest.mark.localstack

PROXY = '''
import json

def handler(event, context):
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "X-From": "lambda"},
        "body": json.dumps({
            "path": event["path"],
            "method": event["httpMethod"],
            "query": event["queryStringParameters"],
            "stage": event["requestContext"]["stage"],
            "body": event["body"],
        }),
    }
'''


@pytest.fixture
def rest_api(stack, deploy):
    """A REST API ``/{proxy+}`` ANY -> the function (AWS_PROXY), deployed to stage ``dev``."""
    name = deploy(PROXY)
    apigateway = stack.client("apigateway")
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    api_id = apigateway.create_rest_api(name=f"api-{name}")["id"]
    root_id = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    resource_id = apigateway.create_resource(
        restApiId=api_id, parentId=root_id, pathPart="{proxy+}"
    )["id"]
    apigateway.put_method(
        restApiId=api_id, resourceId=resource_id, httpMethod="ANY", authorizationType="NONE"
    )
    apigateway.put_integration(
        restApiId=api_id,
        resourceId=resource_id,
        httpMethod="ANY",
        type="AWS_PROXY",
        integrationHttpMethod="POST",
        uri=f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{function_arn}/invocations",
    )
    stack.client("lambda").add_permission(
        FunctionName=name,
        StatementId="apigateway",
        Action="lambda:InvokeFunction",
        Principal="apigateway.amazonaws.com",
        SourceArn=f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api_id}/*/*/*",
    )
    apigateway.create_deployment(restApiId=api_id, stageName="dev")
    yield api_id
    apigateway.delete_rest_api(restApiId=api_id)


def _post(url: str) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(
        url, data=b'{"hello": "world"}', method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, dict(response.headers), json.loads(response.read())


@pytest.mark.parametrize(
    "url_form",
    [
        "{endpoint}/_aws/execute-api/{api_id}/dev/orders/42?expand=items",
        "{endpoint}/restapis/{api_id}/dev/_user_request_/orders/42?expand=items",
    ],
    ids=["_aws-execute-api", "restapis-_user_request_"],
)
def test_a_lambda_proxy_rest_api_answers_on_loopback(stack, rest_api, url_form) -> None:
    url = url_form.format(endpoint=stack.endpoint, api_id=rest_api)

    status, headers, body = _post(url)

    assert status == 201
    assert headers["X-From"] == "lambda"
    assert body == {
        "path": "/orders/42",
        "method": "POST",
        "query": {"expand": "items"},
        "stage": "dev",
        "body": '{"hello": "world"}',
    }
