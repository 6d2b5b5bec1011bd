"""What tests and benchmarks share: the arena's scripts as real processes, an arena stack on a broker of
its own, readers of its topics and synthetic market snapshots."""

from tests.support.market import BASE, snapshot
from tests.support.procs import ROOT, Proc, stop_all
from tests.support.stack import Stack
from tests.support.topics import TopicReader, Watcher

__all__ = ["BASE", "ROOT", "Proc", "Stack", "TopicReader", "Watcher", "snapshot", "stop_all"]
