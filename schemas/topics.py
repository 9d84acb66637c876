"""The topics of the event contract: which record each event topic carries, and where dead letters go."""

EVENT_TOPICS = {
    "Impression": "valueloop.impressions",
    "Click": "valueloop.clicks",
    "Dwell": "valueloop.dwells",
    "AddToCart": "valueloop.add_to_carts",
    "Purchase": "valueloop.purchases",
}
DEAD_LETTER_TOPIC = "valueloop.dead_letter"
