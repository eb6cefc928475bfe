"""Every error Sluice raises, in one tree, so that `except SluiceError` catches all of them:

    SluiceError
    ├── SettingsError          the environment names a setting that does not exist
    ├── SluiceKafkaError       a Kafka operation failed (names the topic)
    ├── ParseError             a record is not an event (its message is the dead letter's reason)
    ├── RecordError            a wire record between workers cannot be read (names its kind)
    │   ├── RecordVersionError ... it is of a newer major schema version (names both versions)
    │   └── RecordKindError    ... it is of a kind this release does not know (skipped, counted)
    ├── FormatError            a text-line pattern in the settings cannot be used (also ValueError)
    ├── FilterStageError       the filter stage cannot go on
    ├── StateError             stored analysis state cannot be read (names the key)
    │   └── StateVersionError  ... it was written by a newer release (names both versions)
    ├── ControlError           an ack or silence could not be written
    ├── SinkError              an alert could not be delivered (says whether to retry)
    ├── RegistryError          a `models` record is unusable, or the registry failed
    ├── RetrainError           the retrainer cannot build a challenger
    ├── FilterError            the small model
    │   ├── FilterModelError   a model file or byte string that cannot be used (names it)
    │   └── TrainingError      no model can be trained from these examples
    └── AnalystError           the large model (carries the bundle's scope)
        ├── LLMCallError       the endpoint could not be reached, or kept failing
        └── LLMOutputError     the answer was not JSON or broke the schema, after the repair

Errors carry where they happened (topic, key, scope, sink) when there is one. The modules that
raise them import them from here; the packages re-export the ones their callers catch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.models.analyst._schema import ErrorCategory

__all__ = [
    "AnalystError",
    "ControlError",
    "FilterError",
    "FilterModelError",
    "FilterStageError",
    "FormatError",
    "LLMCallError",
    "LLMOutputError",
    "ParseError",
    "RecordError",
    "RecordKindError",
    "RecordVersionError",
    "RegistryError",
    "RetrainError",
    "SettingsError",
    "SinkError",
    "SluiceError",
    "SluiceKafkaError",
    "StateError",
    "StateVersionError",
    "TrainingError",
]


class SluiceError(Exception):
    """Root of every error Sluice raises."""


class SettingsError(SluiceError):
    """The environment names a setting that does not exist (a typo would be ignored otherwise)."""


class SluiceKafkaError(SluiceError):
    """A Kafka operation Sluice needs failed; carries the topic when one is involved."""

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(f"{message} (topic {topic})" if topic else message)
        self.topic = topic


class ParseError(SluiceError):
    """Why a record is not an event; its message becomes the dead-letter reason."""


class RecordError(SluiceError, ValueError):
    """A record of a topic Sluice writes (suspects, alerts, feedback ...) that this release
    cannot read; names the record kind, and its message is the dead letter's reason. A
    ValueError too: the followers of a topic count and skip those."""

    def __init__(self, record: str, message: str) -> None:
        article = "an" if record[:1] in ("a", "e", "i", "o", "u") else "a"
        super().__init__(f"not {article} {record} record: {message}")
        self.record = record


class RecordVersionError(RecordError):
    """A record of a newer major schema version: its fields may mean something else, so this
    release refuses it rather than guess (minor changes, added fields, are read)."""

    def __init__(self, record: str, found: int, known: int) -> None:
        SluiceError.__init__(
            self,
            f"schema version {found} of {record} records is newer than this release reads "
            f"({known}): written by a newer release; upgrade this worker, or have the new ones "
            f"write version {known} until all are upgraded (SLUICE_WIRE__WRITE_VERSION)",
        )
        self.record = record
        self.found = found
        self.known = known


class RecordKindError(RecordError):
    """A record of a kind this release does not know on a topic of several kinds (`suspects`,
    `controls`): a newer release's evidence, a minor change. Readers skip it and count it (a dead
    letter would fill with it during every upgrade); what it carries is not used here."""

    def __init__(self, record: str, kind: str) -> None:
        super().__init__(record, f"kind {kind[:100]!r} is unknown to this release (a newer one's?)")
        self.kind = kind


class FormatError(SluiceError, ValueError):
    """A pattern in the settings that cannot be used."""


class FilterStageError(SluiceError):
    """The filter stage cannot go on (Kafka unreachable, a batch that cannot be delivered)."""


class StateError(SluiceError):
    """A stored value of the analysis state cannot be read; names its key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"state {key!r}: {message}")
        self.key = key


class StateVersionError(StateError):
    """A stored value was written by a newer release: this one refuses it rather than guess."""

    def __init__(self, key: str, found: int, known: int) -> None:
        super().__init__(
            key, f"state version {found} is newer than this release reads ({known}); upgrade"
        )
        self.found = found
        self.known = known


class ControlError(SluiceError):
    """A control record could not be written."""


class SinkError(SluiceError):
    """A delivery failed. `retryable`: a later attempt may succeed (timeouts, 5xx, 429);
    otherwise the receiver refused the alert as it is (4xx) and it goes to the dead letters."""

    def __init__(
        self, sink: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"sink {sink}: {message}")
        self.sink = sink
        self.retryable = retryable
        self.retry_after = retry_after


class RegistryError(SluiceError):
    """A registry operation failed or a `models` record is unusable; names the record."""


class RetrainError(SluiceError):
    """The retrainer cannot build a challenger from what it has."""


class FilterError(SluiceError):
    """Root of the filter's errors."""


class FilterModelError(FilterError):
    """A model file or byte string that cannot be used; names where it came from."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source


class TrainingError(FilterError):
    """Training cannot produce a model from these examples."""


class AnalystError(SluiceError):
    """Root of the analyst's errors; carries the scope of the bundle.

    `category` and `summary` are what may leave the process in a report's provenance: both are
    made of Sluice's own words and numbers only (status codes, attempt counts, exception class
    names), never of log text, the LLM's answer, a URL or the scope (which comes from events).
    """

    def __init__(
        self, summary: str, *, category: ErrorCategory = "internal", scope: str | None = None
    ) -> None:
        super().__init__(f"{summary} (scope {scope})" if scope else summary)
        self.summary = summary[:200]
        self.category: ErrorCategory = category
        self.scope = scope


class LLMCallError(AnalystError):
    """The endpoint could not be reached or kept failing after the retries."""


class LLMOutputError(AnalystError):
    """The answer was not JSON or violated the schema, also after the repair attempt."""
