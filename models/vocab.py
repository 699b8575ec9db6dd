"""Tag vocabularies shared by several models (kept in code: models never read data at import)."""

# The 56 MTG-Jamendo mood/theme tags in the official column order of the splits
# (mtg-jamendo-dataset data/tags/moodtheme_split.txt, "mood/theme---" prefix dropped).
JAMENDO_MOODTHEME = (
    "action",
    "adventure",
    "advertising",
    "background",
    "ballad",
    "calm",
    "children",
    "christmas",
    "commercial",
    "cool",
    "corporate",
    "dark",
    "deep",
    "documentary",
    "drama",
    "dramatic",
    "dream",
    "emotional",
    "energetic",
    "epic",
    "fast",
    "film",
    "fun",
    "funny",
    "game",
    "groovy",
    "happy",
    "heavy",
    "holiday",
    "hopeful",
    "inspiring",
    "love",
    "meditative",
    "melancholic",
    "melodic",
    "motivational",
    "movie",
    "nature",
    "party",
    "positive",
    "powerful",
    "relaxing",
    "retro",
    "romantic",
    "sad",
    "sexy",
    "slow",
    "soft",
    "soundscape",
    "space",
    "sport",
    "summer",
    "trailer",
    "travel",
    "upbeat",
    "uplifting",
)


# The feed groups a model's tags by what they describe, so a lighting designer binds scenes to
# moods and never to "rock": moods (AllMusic moods, MTG-Jamendo mood/theme tags, the valence
# classes), emotions (the 9 GEMS scales of Emotify), descriptors (genres, instruments and the
# other MSD / MagnaTagATune tags, genre classes).
VOCABULARIES = ("moods", "emotions", "descriptors")


def vocabulary_of(head_name: str, kind: str, labels: tuple[str, ...]) -> str | None:
    """The feed vocabulary of a head's tags; None for a valence/arousal head (not tags)."""
    from models.musicnn import MSD_LABELS, MTT_LABELS

    if kind == "valence_arousal":
        return None
    if head_name == "gems":
        return "emotions"
    if head_name == "genre" or set(labels) <= set(MSD_LABELS) | set(MTT_LABELS):
        return "descriptors"
    return "moods"
