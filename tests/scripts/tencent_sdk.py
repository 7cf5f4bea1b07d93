"""Drives gse-agent's control API with Tencent's official Python SDK, as a studio backend would.

Reads a plan from stdin: {"endpoint": "host:port", "secret_id", "secret_key", "region"?,
"calls": [{"action": "CreateGameServerSession", "params": {...}}, ...]} and prints one JSON line
per call: {"ok": <the response model, serialized back>} or {"error": {"code", "message"}}.
An action the SDK has no model for (a gse-control extension), or a call with "common": true
(extension parameters), goes through the SDK's common client (call_json), signed the same way.
A warning is a failure: a field the SDK's model does not know fails the call ("UserWarning").
(The SDK itself silences its models' warnings; they are recorded here around each call.)
"""
import json
import sys
import warnings

from tencentcloud.common import credential  # noqa: E402
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (  # noqa: E402
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile  # noqa: E402
from tencentcloud.common.profile.http_profile import HttpProfile  # noqa: E402
from tencentcloud.gse.v20191112 import gse_client, models  # noqa: E402


def main():
    plan = json.load(sys.stdin)
    http = HttpProfile(protocol="http", endpoint=plan["endpoint"], keepAlive=True)
    client = gse_client.GseClient(
        credential.Credential(plan["secret_id"], plan["secret_key"]),
        plan.get("region", "ap-shanghai"),
        ClientProfile(httpProfile=http),
    )
    for call in plan["calls"]:
        action = call["action"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                params = call.get("params", {})
                if call.get("common") or not hasattr(models, action + "Request"):
                    response = client.call_json(action, params)
                    out = {"ok": response["Response"]}
                else:
                    request = getattr(models, action + "Request")()
                    request.from_json_string(json.dumps(params))
                    response = getattr(client, action)(request)
                    out = {"ok": json.loads(response.to_json_string())}
            except TencentCloudSDKException as e:
                out = {"error": {"code": e.get_code(), "message": e.get_message()}}
        useless = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if useless:
            out = {"error": {"code": "UserWarning", "message": "; ".join(useless)}}
        print(json.dumps(out), flush=True)


main()
