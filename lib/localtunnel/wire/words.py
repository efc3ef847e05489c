"""Our own word lists for human-readable tunnel ids (adjective-animal-number).

Short, plain, lowercase words that read well in a URL and are safe to say aloud in a demo.
"""

ADJECTIVES = (
    "able", "amber", "ample", "azure", "bold", "brave", "breezy", "bright", "brisk", "calm",
    "candid", "cheery", "chill", "clever", "cosy", "crisp", "curly", "daring", "dapper", "deft",
    "eager", "early", "easy", "fancy", "fluffy", "frank", "fresh", "friendly", "gentle", "giddy",
    "glad", "golden", "grand", "happy", "hardy", "honest", "humble", "jolly", "keen", "kind",
    "lively", "lucky", "merry", "mellow", "mighty", "modest", "neat", "nimble", "noble", "placid",
    "plucky", "polite", "proud", "quick", "quiet", "rapid", "ready", "rosy", "rustic", "shiny",
    "silent", "silver", "simple", "sleek", "smart", "snappy", "snug", "solid", "spry", "steady",
    "sturdy", "sunny", "swift", "tidy", "tiny", "tranquil", "trusty", "upbeat", "vivid", "warm",
    "wise", "witty", "zesty", "zippy",
)

ANIMALS = (
    "alpaca", "badger", "beaver", "bison", "bobcat", "camel", "cheetah", "condor", "corgi",
    "coyote", "crane", "cricket", "dingo", "dolphin", "donkey", "eagle", "falcon", "ferret",
    "finch", "gecko", "gibbon", "giraffe", "goose", "gopher", "heron", "hedgehog", "ibis",
    "iguana", "jackal", "jaguar", "koala", "lemur", "lemming", "llama", "lobster", "lynx",
    "magpie", "marmot", "meerkat", "mole", "moose", "narwhal", "newt", "ocelot", "octopus",
    "osprey", "otter", "owl", "panda", "panther", "parrot", "pelican", "penguin", "pigeon",
    "puffin", "quail", "rabbit", "raccoon", "raven", "robin", "salmon", "seal", "shrew",
    "sparrow", "squid", "stork", "swan", "tapir", "tiger", "toucan", "turtle", "walrus",
    "weasel", "whale", "wombat", "wren", "yak", "zebra",
)
