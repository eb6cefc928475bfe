"""The recall tally's feed: a follower of the `outcomes` topic that counts each record into the
worker's `RecallTally` (`learning.recall`), for the metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream.kafka.followers import TopicFollower
from sluice.stream.learning.recall import RecallTally
from sluice.stream.records import Outcome, read_record
from sluice.stream.settings import Settings

if TYPE_CHECKING:
    pass

__all__ = ["OutcomeWatcher"]


class OutcomeWatcher:
    """Folds every `outcomes` record into a RecallTally, from the beginning, until stopped."""

    def __init__(self, settings: Settings, tally: RecallTally) -> None:
        self.tally = tally
        self._follower = TopicFollower(
            settings,
            settings.topics.outcomes,
            "sluice-outcomes",
            lambda raw: tally.add(read_record(Outcome, raw)),
        )

    async def run(self) -> None:
        await self._follower.run()

    def stop(self) -> None:
        self._follower.stop()
