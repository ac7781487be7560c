from streamapp.config import Settings


def test_output_topics_follow_the_topic_prefix_unless_set(monkeypatch):
    monkeypatch.setenv("TOPIC_PREFIX", "live")
    monkeypatch.delenv("OUTPUT_TOPIC_PREFIX", raising=False)
    cfg = Settings()
    assert cfg.output_topic("outcomes") == "live.outcomes" == cfg.topic("outcomes")

    monkeypatch.setenv("OUTPUT_TOPIC_PREFIX", "live.replay")
    cfg = Settings()
    assert cfg.topic("ratings") == "live.ratings"  # reads the same events
    assert cfg.output_topic("outcomes") == "live.replay.outcomes"
    assert cfg.output_topic("deadletter") == "live.replay.deadletter"
