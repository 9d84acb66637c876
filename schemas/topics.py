"""The topics of the event contract: which record each event topic carries, where the serving log goes, and
where dead letters go."""

EVENT_TOPICS = {
    "Impression": "valueloop.impressions",
    "Click": "valueloop.clicks",
    "Dwell": "valueloop.dwells",
    "AddToCart": "valueloop.add_to_carts",
    "Purchase": "valueloop.purchases",
}
DEAD_LETTER_TOPIC = "valueloop.dead_letter"
SERVING_LOG_TOPIC = "valueloop.serving_log"  # ServedRequest: what the ranking service chose from, with what chance
