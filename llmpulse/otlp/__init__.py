"""OpenTelemetry in: GenAI spans from the Collector's Kafka topic and from OTLP/HTTP.

Two entrances, one log. The Collector's Kafka exporter writes
``ExportTraceServiceRequest`` payloads to ``otlp_spans`` (``otlp_proto`` by
default, or ``otlp_json``); the ``POST /v1/traces`` receiver writes what SDKs
send it to the same topic. The worker reads that topic and turns each GenAI span
into a v1 trace event, which then takes the ordinary path (batch validation,
dedup, pricing, windows, ``traces``). docs/otlp.md has the mapping table.

Interface for the worker (pure, no I/O)::

    decoder = OtlpDecoder(settings.otlp, store_text=settings.clickhouse.store_text)
    out = decoder.decode(message.value, "kafka:otlp_spans/3@120")   # one per Kafka message
    out.events       # [(event JSON bytes, "kafka:otlp_spans/3@120#2"), ...]
    out.messages()   # the same as RawMessage, ready for IngestPipeline.prepare/handle
    out.skipped      # spans that are not GenAI operations (count them, do not reject)
    out.rejections   # [Rejection]: the payload as a whole, or spans with malformed ids

``decode`` never raises for bad input; the event JSON passes
``llmpulse.processors.batch_validate.validate_batch`` (values that break the
event contract, such as negative token counts, are rejected there with the
span's source). ``decode_message(value, source, settings, store_text=...)`` is
the one-call form.

Interface for the web layer::

    receiver = OtlpReceiver(settings.otlp, produce)   # produce(value) -> Awaitable[None]
    answer = await receiver.export(body, content_type, content_encoding)
    answer.status, answer.body, answer.content_type

``produce`` must resolve only once Kafka acknowledged the message (for aiokafka:
``lambda v: producer.send_and_wait(settings.otlp.topic, v)`` with ``acks="all"``).
On the worker's Faust web server: ``app.page("/v1/traces")(traces_view(receiver))``
(``llmpulse.otlp.web``).
"""

from llmpulse.otlp.codec import Encoding, encode_request, parse_request, sniff_encoding
from llmpulse.otlp.decode import OtlpDecoded, OtlpDecoder, decode_message
from llmpulse.otlp.receiver import OtlpHttpResponse, OtlpReceiver, Produce, receive_traces

__all__ = [
    "Encoding",
    "OtlpDecoded",
    "OtlpDecoder",
    "OtlpHttpResponse",
    "OtlpReceiver",
    "Produce",
    "decode_message",
    "encode_request",
    "parse_request",
    "receive_traces",
    "sniff_encoding",
]
