"""The HTTP floor for scripts/bench: a bare Litestar route on uvicorn with the server's settings."""

import sys

import uvicorn
from litestar import Litestar, Request, Response, post

# About the size of a CartPole step reply, so the floor moves the same bytes.
REPLY = b'{"observation":[0.01,0.02,0.03,0.04],"reward":1.0,"done":false,"info":{},"terminated":false,"truncated":false}'


@post("/v1/envs/{instance_id:str}/step", status_code=200)
async def step(request: Request, instance_id: str) -> Response:
    await request.body()
    return Response(REPLY, media_type="application/json")


if __name__ == "__main__":
    app = Litestar([step], openapi_config=None, logging_config=None)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                access_log=False, log_level="warning")
