"""The official Python SDKs as clients of the clutch gateway.

Run by tests/sdk.rs with GATEWAY_URL set; each profile there sends requests to a fake
upstream of a *different* protocol than the SDK speaks. The fake answers "SDK-PONG", asks for
a tool call when the prompt holds [[tool:NAME]], and fails with a status for [[status:N]].
Prints one line per check and exits non-zero on the first failure.
"""
import os
import sys

import anthropic
import openai
from google import genai
from google.genai import errors as genai_errors, types as genai_types

GATEWAY = os.environ["GATEWAY_URL"]
ANSWER = "SDK-PONG"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def expect_error(name, error_type, call):
    try:
        call()
    except error_type as error:
        check(name, True)
        return error
    except Exception as error:  # noqa: BLE001 - report what came instead
        check(name, False, f"raised {type(error).__name__}: {error}")
    check(name, False, "no error raised")


def anthropic_sdk():
    client = anthropic.Anthropic(base_url=f"{GATEWAY}/p/to-chat", api_key="any", max_retries=0)
    text = ""
    with client.messages.stream(model="claude-sonnet-4", max_tokens=100,
                                messages=[{"role": "user", "content": "say pong"}]) as stream:
        for chunk in stream.text_stream:
            text += chunk
        final = stream.get_final_message()
    check("anthropic: streaming text", text == ANSWER, text)
    check("anthropic: usage", final.usage.input_tokens == 12 and final.usage.output_tokens == 3, final.usage)
    check("anthropic: stop reason", final.stop_reason == "end_turn", final.stop_reason)

    tools = [{"name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"], "input_schema": WEATHER_TOOL["parameters"]}]
    first = client.messages.create(model="claude-sonnet-4", max_tokens=100, tools=tools,
                                   messages=[{"role": "user", "content": "weather? [[tool:get_weather]]"}])
    calls = [b for b in first.content if b.type == "tool_use"]
    check("anthropic: tool call", first.stop_reason == "tool_use" and calls and calls[0].name == "get_weather"
          and calls[0].input == {"city": "Paris"}, first)
    second = client.messages.create(model="claude-sonnet-4", max_tokens=100, tools=tools, messages=[
        {"role": "user", "content": "weather? [[tool:get_weather]]"},
        {"role": "assistant", "content": [c.model_dump() for c in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"}]}])
    check("anthropic: tool round trip", second.content[0].text == f"{ANSWER} after tool", second)

    expect_error("anthropic: 429 is RateLimitError", anthropic.RateLimitError, lambda: client.messages.create(
        model="claude-sonnet-4", max_tokens=10, messages=[{"role": "user", "content": "[[status:429]]"}]))
    expect_error("anthropic: 500 is InternalServerError", anthropic.InternalServerError, lambda: client.messages.create(
        model="claude-sonnet-4", max_tokens=10, messages=[{"role": "user", "content": "[[status:500]]"}]))


def openai_sdk():
    client = openai.OpenAI(base_url=f"{GATEWAY}/p/to-anthropic/v1", api_key="any", max_retries=0)
    text, usage = "", None
    stream = client.chat.completions.create(model="gpt-test", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "say pong"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    check("openai chat: streaming text", text == ANSWER, text)
    check("openai chat: usage", usage is not None and usage.prompt_tokens == 12 and usage.completion_tokens == 3, usage)

    tools = [{"type": "function", "function": WEATHER_TOOL}]
    first = client.chat.completions.create(model="gpt-test", tools=tools,
                                           messages=[{"role": "user", "content": "weather? [[tool:get_weather]]"}])
    call = first.choices[0].message.tool_calls[0]
    check("openai chat: tool call", first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", first)
    second = client.chat.completions.create(model="gpt-test", tools=tools, messages=[
        {"role": "user", "content": "weather? [[tool:get_weather]]"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    check("openai chat: tool round trip", second.choices[0].message.content == f"{ANSWER} after tool", second)

    expect_error("openai: 429 is RateLimitError", openai.RateLimitError, lambda: client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "[[status:429]]"}]))
    expect_error("openai: 500 is InternalServerError", openai.InternalServerError, lambda: client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "[[status:500]]"}]))

    responses = openai.OpenAI(base_url=f"{GATEWAY}/p/to-gemini/v1", api_key="any", max_retries=0)
    text = ""
    final = None
    for event in responses.responses.create(model="gpt-test", input="say pong", stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            final = event.response
    check("openai responses: streaming text", text == ANSWER, text)
    check("openai responses: usage", final is not None and final.usage.input_tokens == 12 and final.usage.output_tokens == 3, final)
    first = responses.responses.create(model="gpt-test", input="weather? [[tool:get_weather]]",
                                       tools=[{"type": "function", **WEATHER_TOOL}])
    calls = [o for o in first.output if o.type == "function_call"]
    check("openai responses: tool call", calls and calls[0].name == "get_weather", first)
    second = responses.responses.create(model="gpt-test", tools=[{"type": "function", **WEATHER_TOOL}], input=[
        {"role": "user", "content": "weather? [[tool:get_weather]]"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}])
    check("openai responses: tool round trip", second.output_text == f"{ANSWER} after tool", second)
    expect_error("openai responses: 429 is RateLimitError", openai.RateLimitError,
                 lambda: responses.responses.create(model="gpt-test", input="[[status:429]]"))


def genai_sdk():
    client = genai.Client(api_key="any", http_options=genai_types.HttpOptions(base_url=f"{GATEWAY}/p/to-chat",
                                                                              retry_options=genai_types.HttpRetryOptions(attempts=1)))
    text, usage = "", None
    for chunk in client.models.generate_content_stream(model="gemini-test", contents="say pong"):
        text += chunk.text or ""
        usage = chunk.usage_metadata or usage
    check("google-genai: streaming text", text == ANSWER, text)
    check("google-genai: usage", usage is not None and usage.prompt_token_count == 12, usage)

    tool = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
        name="get_weather", description="Weather", parameters_json_schema=WEATHER_TOOL["parameters"])])
    config = genai_types.GenerateContentConfig(tools=[tool], automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True))
    first = client.models.generate_content(model="gemini-test", contents="weather? [[tool:get_weather]]", config=config)
    calls = first.function_calls or []
    check("google-genai: tool call", calls and calls[0].name == "get_weather" and calls[0].args == {"city": "Paris"}, first)
    second = client.models.generate_content(model="gemini-test", config=config, contents=[
        genai_types.Content(role="user", parts=[genai_types.Part(text="weather? [[tool:get_weather]]")]),
        first.candidates[0].content,
        genai_types.Content(role="user", parts=[genai_types.Part.from_function_response(name="get_weather", response={"output": "sunny"})])])
    check("google-genai: tool round trip", second.text == f"{ANSWER} after tool", second)

    error = expect_error("google-genai: 429 is ClientError", genai_errors.ClientError,
                         lambda: client.models.generate_content(model="gemini-test", contents="[[status:429]]"))
    check("google-genai: 429 code", error.code == 429, error.code)
    error = expect_error("google-genai: 500 is ServerError", genai_errors.ServerError,
                         lambda: client.models.generate_content(model="gemini-test", contents="[[status:500]]"))
    check("google-genai: 500 code", error.code == 500, error.code)


if __name__ == "__main__":
    anthropic_sdk()
    openai_sdk()
    genai_sdk()
    print("all SDK checks passed")
