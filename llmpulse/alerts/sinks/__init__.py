"""Where notified transitions go: PagerDuty, webhooks, Slack, the control topic.

A :class:`Sink` turns one transition into one delivery and raises
:class:`SinkError` saying whether a retry may help. The :class:`Dispatcher`
keeps stream processing free of all of it: ``submit`` only appends to a
bounded per-sink buffer, and one background sender per sink delivers in order
(see :mod:`llmpulse.alerts.sinks.dispatch`).

One module per job: ``base`` (the protocol), ``http`` (JSON over HTTP),
``pagerduty``, ``slack``, ``webhook``, ``control`` (the sinks and their
payloads), ``memory`` (the test double), ``dispatch`` and ``factory``
(:func:`build_sinks` from settings).

>>> from datetime import UTC, datetime
>>> from llmpulse.alerts.rules import ThresholdRule
>>> from llmpulse.alerts.synthetic import synthetic_transition
>>> t = synthetic_transition(ThresholdRule(name="p99", signal="latency_p99_ms",
...     threshold=800, severity="error"), datetime(2026, 1, 1, tzinfo=UTC))
>>> ev = pagerduty_event(t, "R" * 32)
>>> ev["event_action"], ev["payload"]["severity"], ev["payload"]["source"], ev["client"]
('trigger', 'error', 'llmpulse-test', 'llmpulse')
>>> sink = MemorySink()
>>> d = Dispatcher([sink])
>>> d.submit(t), d.flush(timeout=5), [x.rule for x in sink.transitions]
(True, True, ['p99'])
>>> d.close()
True
"""

from llmpulse.alerts.sinks.base import Publish, Sink
from llmpulse.alerts.sinks.control import ControlSink, actions_for, control_event
from llmpulse.alerts.sinks.dispatch import Dispatcher, DispatcherMetrics
from llmpulse.alerts.sinks.factory import build_sinks
from llmpulse.alerts.sinks.http import post_json
from llmpulse.alerts.sinks.memory import MemorySink
from llmpulse.alerts.sinks.pagerduty import PagerDutySink, pagerduty_event
from llmpulse.alerts.sinks.slack import SlackSink, slack_message
from llmpulse.alerts.sinks.webhook import WebhookSink
from llmpulse.errors import SinkError

__all__ = [
    "ControlSink",
    "Dispatcher",
    "DispatcherMetrics",
    "MemorySink",
    "PagerDutySink",
    "Publish",
    "Sink",
    "SinkError",
    "SlackSink",
    "WebhookSink",
    "actions_for",
    "build_sinks",
    "control_event",
    "pagerduty_event",
    "post_json",
    "slack_message",
]

# The package is where the classes live for users (as in httpx): reprs, errors
# and pickles name llmpulse.alerts.sinks, not the module that happens to hold them.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) and _value.__module__.startswith(f"{__name__}."):
        _value.__module__ = __name__
del _name, _value
