"""A look-alike's answer is never served; a true repeat or paraphrase is. End to end, real embedder.

Each case asks `stored` (answered by the backend and remembered), then `asked`, in a scope of its
own; the tier of the second answer says whether memory served it. The cases are written here, not
taken from bench/data, so the tests do not check the decision on the pairs it was calibrated on.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from budget.reuse.compare import compare
from budget.reuse.context import same_context
from tests.conftest import ProxyFactory, RunningProxy, ServerThread, stub_url

_scopes = itertools.count()


def second_tier(proxy: RunningProxy, stored: list[dict[str, str]], asked: list[dict[str, str]]) -> str:
    system = [{"role": "system", "content": f"You are support agent number {next(_scopes)}."}]
    client = proxy.client()
    client.chat.completions.create(model="stub", messages=system + stored, temperature=0)  # type: ignore[arg-type]
    proxy.settle()
    raw = client.chat.completions.with_raw_response.create(
        model="stub",
        messages=system + asked,  # type: ignore[arg-type]
        temperature=0,
    )
    return raw.headers["x-speedup-tier"]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def proxy(start_proxy: ProxyFactory, stub_backend: ServerThread) -> RunningProxy:
    return start_proxy(stub_url(stub_backend))


NEGATIONS = [
    ("Cancel my subscription at the end of the month.", "Don't cancel my subscription at the end of the month."),
    ("Is the delivery fee refundable?", "Is the delivery fee not refundable?"),
    ("Can I travel with an expired passport?", "Can I never travel with an expired passport?"),
]
ANTONYMS = [
    ("How do I turn on location sharing?", "How do I turn off location sharing?"),
    ("Is the pharmacy open on Sunday?", "Is the pharmacy closed on Sunday?"),
    ("How do I opt in to the pension scheme?", "How do I opt out of the pension scheme?"),
    ("What happens if my claim is approved?", "What happens if my claim is rejected?"),
    ("Is the installation included in the price?", "Is the installation excluded from the price?"),
]
OTHER_OWNERS = [
    ("How do I reset my password?", "How do I reset my colleague's password?"),
    ("Can I see my order history?", "Can I see my son's order history?"),
    ("How do I delete a project?", "How do I delete an organisation?"),
    ("Why was I charged twice this month?", "Why was I charged twice last month?"),
]
REVERSED = [
    ("How do I move money from savings to my current account?", "How do I move money from my current account?"),
    ("Is a flight from Leeds to Oslo cheaper on Tuesdays?", "Is a flight from Oslo to Leeds cheaper on Tuesdays?"),
    ("Mo gives 4 cards to Ivy. Ivy had 6. How many now?", "Ivy gives 4 cards to Mo. Ivy had 6. How many now?"),
]
PARAPHRASES = [
    ("How do I update my billing address?", "What are the steps to update my billing address?"),
    ("If my parcel is lost, can I get a refund?", "Can I get a refund if my parcel is lost?"),
    ("Can I change my appointment to Friday?", "Is it possible to change my appointment to Friday?"),
    (
        "Ann bought 3 books and received 2 more. How many books?",
        "Ann purchased 3 books and got 2 more. How many books?",
    ),
]
TYPOS = [
    ("How do I cancel my gym membership?", "how do i cancle my gym membreship"),
    ("Where can I download my tax certificate?", "Hi! Where can I downlaod my tax certificate? Thanks"),
]


@pytest.mark.parametrize(("stored", "asked"), NEGATIONS)
def test_a_negation_is_never_reused(proxy: RunningProxy, stored: str, asked: str) -> None:
    assert second_tier(proxy, user(stored), user(asked)) != "reuse"


@pytest.mark.parametrize(("stored", "asked"), ANTONYMS)
def test_an_antonym_is_never_reused(proxy: RunningProxy, stored: str, asked: str) -> None:
    assert second_tier(proxy, user(stored), user(asked)) != "reuse"


@pytest.mark.parametrize(("stored", "asked"), OTHER_OWNERS)
def test_another_owners_or_scopes_question_is_never_reused(proxy: RunningProxy, stored: str, asked: str) -> None:
    assert second_tier(proxy, user(stored), user(asked)) != "reuse"


@pytest.mark.parametrize(("stored", "asked"), REVERSED)
def test_a_reversed_direction_is_never_reused(proxy: RunningProxy, stored: str, asked: str) -> None:
    assert second_tier(proxy, user(stored), user(asked)) != "reuse"


@pytest.mark.parametrize(("stored", "asked"), PARAPHRASES)
def test_a_true_paraphrase_is_reused(proxy: RunningProxy, stored: str, asked: str) -> None:
    assert second_tier(proxy, user(stored), user(asked)) == "reuse"


@pytest.mark.parametrize(("stored", "asked"), TYPOS)
def test_a_typod_repeat_is_reused(proxy: RunningProxy, stored: str, asked: str) -> None:
    assert second_tier(proxy, user(stored), user(asked)) == "reuse"


def chat(*turns: str) -> list[dict[str, Any]]:
    roles = itertools.cycle(("user", "assistant"))
    return [{"role": role, "content": text} for role, text in zip(roles, turns, strict=False)]


def test_a_follow_up_after_another_context_is_never_reused(proxy: RunningProxy) -> None:
    flight = chat("I need to cancel my flight to Rome.", "I can help with that. Booking FL-221 is on a flexible fare.")
    hotel = chat("I need to cancel my hotel in Rome.", "I can help with that. Booking HT-118 is on a flexible rate.")
    assert second_tier(proxy, flight + user("Is there a fee?"), hotel + user("Is there a fee?")) != "reuse"
    upgrade = chat("My plan feels too small.", "Would you like me to upgrade you to Premium?")
    downgrade = chat("My plan feels too small.", "Would you like me to downgrade you to Basic?")
    assert second_tier(proxy, upgrade + user("Yes please."), downgrade + user("Yes please.")) != "reuse"
    detail = chat("I want to return order 5512.", "Order 5512 was delivered on 3 May.")
    other = chat("I want to return order 5521.", "Order 5521 was delivered on 3 May.")
    assert (
        second_tier(proxy, detail + user("Can I still return it?"), other + user("Can I still return it?")) != "reuse"
    )
    assert second_tier(proxy, user("Is there a fee?"), flight + user("Is there a fee?")) != "reuse"


def test_a_follow_up_after_the_same_context_is_reused_despite_small_talk_and_an_earlier_question(
    proxy: RunningProxy,
) -> None:
    flight = chat("I need to cancel my flight to Rome.", "I can help with that. Booking FL-221 is on a flexible fare.")
    chatty = chat("Hi there!", "Hello! How can I help?", "What are your opening hours?", "We are open 8 to 8.")
    assert second_tier(proxy, flight + user("Is there a fee?"), chatty + flight + user("is there a fee")) == "reuse"
    parcel = chat("My parcel hasn't arrived yet.", "I can see parcel PX-310: it left our depot today, due tomorrow.")
    thanked = parcel + chat("Great, thanks!", "You're welcome! Anything else?")
    assert second_tier(
        proxy, parcel + user("Can I change the address?"), thanked + user("Can I change the address?")
    ) == ("reuse")


def test_the_comparison_folds_only_what_cannot_change_the_answer() -> None:
    assert compare(
        "Can I get a refund if my flight is cancelled?", "If my flight is canceled, can I get a refund?"
    ).same
    assert not compare("7 cows and 12 hens: how many legs?", "12 cows and 7 hens: how many legs?").same
    assert not compare(
        "Can I swap my aisle seat for a window seat?", "Can I swap my window seat for an aisle seat?"
    ).same
    assert not same_context([], ["user: I need to cancel my flight.", "assistant: Sure."])


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        (
            "Is the deposit refunded if the booking is cancelled?",
            "Is the booking cancelled if the deposit is refunded?",
        ),
        ("Am I charged if I cancel?", "Do I cancel if I am charged?"),
        ("Will I be charged?", "When will I be charged?"),
        ("Do I get charged for the trial?", "Did I get charged for the trial?"),
        ("How do I transfer to my partner's account?", "How do I transfer my partner's account?"),
        ("Is parking free?", "Is the park free?"),
        ("Is training paid?", "Is the train paid?"),
        ("How much is the team plan?", "How much is the plan?"),
        ("Can I take out a loan?", "Can I withdraw a loan?"),
        ("Can I pause my deliveries while I'm away?", "Can I stop my deliveries while I'm away?"),
    ],
)
def test_a_changed_condition_tense_particle_or_word_form_is_never_folded(stored: str, asked: str) -> None:
    assert not compare(stored, asked).same


# What a review of the grammar folds found judged the same although the answers differ; each is refused now.
@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Was I charged for the renewal?", "Will I be charged for the renewal?"),
        ("Why did my internet cut off?", "Why was my internet cut off?"),  # a fault, or cut off for not paying
        ("Who gets paid the deposit?", "Who paid the deposit?"),
        ("I got married last year, can I add my spouse?", "I was married last year, can I add my spouse?"),
        ("When is my bill due?", "What time is my bill due?"),  # a day, not an hour
        ("When is my bill due?", "Is my bill due?"),
        ("Do you know when the store is open?", "Is the store open?"),
        ("Can you let me know when my order is dispatched?", "Is my order dispatched?"),
        ("When do you charge my card?", "Do you charge my card?"),
        ("What do you charge for?", "What is the fee for?"),
        ("When I cancel, do I get a refund?", "Do I get a refund?"),
        ("Can I get a refund without it?", "Can I get a refund?"),
        ("Can I still board if I don't have it?", "Can I still board?"),
        ("If I cancel without notice, will I be charged?", "If I cancel, will I be charged without notice?"),
        ("Can I return a gift without a receipt?", "Can I return a gift if I have a receipt?"),
        ("If I cancel now, do I get a refund?", "If I cancel, do I get a refund now?"),
        ("How do I add a second user to my account?", "How do I add a user to my second account?"),
        ("Can I use my new SIM in my phone?", "Can I use my SIM in my new phone?"),
        ("Is my booking cancelled if I get a refund?", "My booking is cancelled. Do I get a refund?"),
        ("Can you check if I was charged twice?", "Can you check? I was charged twice."),
        ("Can you tell me if I was charged twice?", "I was charged twice."),
        ("Do I need a new router?", "I need a new router."),
        ("Is my flight cancelled?", "My flight is cancelled."),
        ("Has my order shipped?", "Has my order been delivered?"),
        ("Will it hurt my credit if I settle the debt?", "Will it hurt my credit if I pay the debt?"),
        ("What should I do if there is a flood alert?", "What should I do if there is a flood warning?"),
        ("Is it possible for my son to pay?", "Is it possible for me to pay?"),
        ("If I move from London to Paris, do I pay tax?", "Do I pay tax if I move from Paris to London?"),
        (
            "Tom buys 3 shirts for $10 each and 2 hats for $5. How much does he spend?",
            "Tom buys 3 shirts for $10 and 2 hats for $5 each. How much does he spend?",
        ),
    ],
)
def test_a_tense_condition_owner_scope_or_statement_survives_the_grammar_folds(stored: str, asked: str) -> None:
    assert not compare(stored, asked).same


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Can my employer pay for my plan?", "Is it possible for my employer to pay for my plan?"),
        ("If I don't have the receipt, can I exchange it?", "Can I exchange it if I don't have the receipt?"),
        ("Do I need a visa to visit Peru?", "Is a visa needed to visit Peru?"),
        ("Is there a fee for paying by card?", "Do you charge for paying by card?"),
        ("How do I enable dark mode?", "I want to enable dark mode, how do I do it?"),
        ("How many legs if a farmer has 7 cows?", "A farmer has 7 cows. How many legs?"),
        ("Can I get a refund if my flight is cancelled?", "My flight is cancelled. Can I get a refund?"),
        ("Do kids under 2 fly free?", "Do children under 2 fly for free?"),
    ],
)
def test_a_grammatical_rewording_is_folded(stored: str, asked: str) -> None:
    assert compare(stored, asked).same


# What a second review found served although the answers differ; each is refused now.
@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        (
            "I cancelled my subscription. Then you charged me. Why?",
            "You charged me. Then I cancelled my subscription. Why?",
        ),
        (
            "Sara had 20 stickers. She gave away half. Then she got 6 more. How many does she have?",
            "Sara had 20 stickers. She got 6 more. Then she gave away half. How many does she have?",
        ),
        (
            "Start with 3. Add 5, then double it. What do you get?",
            "Start with 3. Double it, then add 5. What do you get?",
        ),
        ("Should I tip the driver?", "Do I have to tip the driver?"),  # advice is not obligation
        ("Can I transfer my ticket?", "Can I move my ticket?"),  # to someone else, or to another date
        ("I need to cancel my order. Is there a fee?", "Do I need to cancel my order? Is there a fee?"),
        ("My son can drive. Is he insured?", "Can my son drive? Is he insured?"),
        ("How do I delete my account?", "How do I remove my account?"),
        ("How do I edit a PDF?", "How do I convert a PDF?"),
        ("Can I use any charger with my phone?", "Can I use the charger with my phone?"),
        ("Can I return some of my order?", "Can I return my order?"),
        ("Has the seller been paid?", "Has the seller paid?"),
        ("What does this button do?", "What is this button?"),
        ("Is the discount just for new customers?", "Is the discount for new customers?"),
        ("Does the app work well with Mac?", "Does the app work with Mac?"),
        ("How can I get a refund quickly?", "How can I get a refund?"),
        ("Can I pay by card there?", "Can I pay by card?"),
        ("What is my shipping date?", "What is my delivery date?"),  # dispatch, or arrival
        ("How do I register for mobile banking?", "How do I register for phone banking?"),
        ("Where is my refund?", "Where can I find my refund?"),  # its status, or where to look
        ("Can I book a double?", "Can I book twice?"),
        ("I was charged twice today. I cancelled. Why?", "I was charged twice. Today I cancelled. Why?"),
        ("Can I keep my points if I cancel and get a refund?", "Can I keep my points and get a refund if I cancel?"),
        ("If I cancel now, do I get a refund?", "If I cancel, now do I get a refund?"),
        ("If I don't have to pay, can I cancel?", "If I have no to pay, can I cancel?"),
        ("Is the book required?", "Is booking required?"),
        # A real word is nobody's typo, and a replaced letter is as often another word.
        ("How do I turn off autoplay?", "How do I turn off autopay?"),
        ("Can I link my user account?", "Can I link my Uber account?"),
        ("Does the case fit an iPod?", "Does the case fit an iPad?"),
        ("How do I reboot?", "How do I rebook?"),
        ("Can I change the amount?", "Can I change the acount?"),
        ("Can I get a recipe for my order?", "Can I get a recipt for my order?"),
        ("Is my card stored?", "Is my card stoped?"),
    ],
)
def test_order_obligation_scope_owner_and_real_words_survive_the_folds(stored: str, asked: str) -> None:
    assert not compare(stored, asked).same


def test_accepting_and_declining_an_offer_are_never_the_same_context() -> None:
    offer = ["user: I booked a flight to Rome.", "assistant: Done. Would you like travel insurance for $20?"]
    accepted = ["Great, do it.", "Perfect, please do.", "Awesome, thanks!", "Fine."]
    declined = ["I'm good, thanks.", "I'm all set, thanks.", "All good.", "I'm fine, thank you."]
    for yes in accepted:
        for no in declined:
            assert not same_context(offer + [f"user: {yes}"], offer + [f"user: {no}"])
    # Small talk that answers no question still does not matter.
    thanks = ["user: Thanks!", "assistant: You're welcome."]
    assert same_context(offer + ["user: Yes please."], thanks + offer + ["user: Yes please."])


# What a third review found served although the answers differ; each is refused now. Known gap, left
# as it is: a comma added or moved inside a run-on sentence.
@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("My flight is cancelled.", "My flight is cancelled?"),
        ("I need a new router.", "I need a new router?"),
        ("Cancel my order.", "Cancel my order?"),
        ("Is there a fee if I cancel? Can I rebook?", "Is there a fee? Can I rebook if I cancel?"),
        (
            "Do I get a refund if my flight is delayed? Can I change my seat?",
            "Do I get a refund? Can I change my seat if my flight is delayed?",
        ),
        (
            "Will I be charged if I cancel, or will I get a refund?",
            "Will I be charged, or will I get a refund if I cancel?",
        ),
        (
            "I cancelled my plan before the renewal. You charged me. Why?",
            "I cancelled my plan. You charged me before the renewal. Why?",
        ),
        (
            "I paid before noon and cancelled after 3pm. Do I get a refund?",
            "I paid after 3pm and cancelled before noon. Do I get a refund?",
        ),
        (
            "Sara had 20 stickers. She gave away 5 before school. She got 3 after school. How many at lunch?",
            "Sara had 20 stickers. She gave away 5 after school. She got 3 before school. How many at lunch?",
        ),
        ("Как отменить заказ?", "Как оформить заказ?"),
        ("Can I pay with 支付宝?", "Can I pay with 微信?"),
        ("What is 48 ÷ 6?", "What is 48 × 6?"),
        ("What is 12 + 4?", "What is 12 - 4?"),
        ("Can the battery be used at -20°C?", "Can the battery be used at 20°C?"),
        ("Why is my balance -£50?", "Why is my balance £50?"),
        ("Is shipping free for orders > $50?", "Is shipping free for orders < $50?"),
        ("Is there a fee for sending €100?", "Is there a fee for sending £100?"),
        ("Can I send parcels over 1,5 kg?", "Can I send parcels over 15 kg?"),
        ("Is macOS 10.10 supported?", "Is macOS 10.1 supported?"),
        ("Do my 2 and 5 year old kids fly free?", "Do my two 5 year old kids fly free?"),
        ("Is the charger and case included?", "Is the charger case included?"),
        ("Can I keep my points if I cancel then rebook?", "Can I keep my points and rebook if I cancel?"),
        ("What is a routing number?", "What is the routing number?"),
        ("What is a PIN?", "What is the PIN?"),
        ("Who is paid first?", "Who paid first?"),
        ("How long will the engineer be there?", "How long will the engineer be?"),
        ("Can I return it to the store?", "Can I return to the store?"),
        ("Can I be added to the policy?", "Can it be added to the policy?"),
        ("How much money does Jo have to spend?", "How much money must Jo spend?"),
        ("What are the charges on my card?", "What are the fees on my card?"),
        ("When will I be billed?", "When will I be charged?"),
        ("Can I pay by mobile phone?", "Can I pay by phone?"),
        ("Can I bring back the item?", "Can I send back the item?"),
        ("Is the meeting room free?", "Is the meeting room free of charge?"),
        ("Do I get money back on purchases?", "Do I get a refund on purchases?"),
        ("What is the swap rate?", "What is the exchange rate?"),
        ("Am I getting a refund?", "Do I get a refund?"),
        ("Are your prices going up?", "Do your prices go up?"),
        ("Can you let me know if my flight is delayed?", "Can you let me know whether my flight is delayed?"),
        ("Can I get a refund if my flight is cancelled?", "Is my flight cancelled. Can I get a refund?"),
        ("How long is the cable?", "How much time is the cable?"),
        ("What if my bag is over?", "What if my bag ends?"),
        ("Is everything covered but the screen?", "Is everything covered and the screen?"),
        ("Can I upgrade my package?", "Can I upgrade my parcel?"),
    ],
)
def test_punctuation_signs_scripts_and_sentence_structure_are_never_folded_away(stored: str, asked: str) -> None:
    assert not compare(stored, asked).same


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I get my depot key back?", "How do I get my depost key back?"),  # or "deposit"
        ("Can I get the painted version?", "Can I get the pinted version?"),  # or "printed", "pointed"
        ("Is the electric model in stock?", "Is the electic model in stock?"),  # or "eclectic"
    ],
)
def test_a_typo_that_could_be_another_common_word_is_never_corrected(stored: str, asked: str) -> None:
    assert not compare(stored, asked).same


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I reset my password?", "How do I reset my pasword?"),
        ("When will my delivery arrive?", "When will my deliverry arrive?"),
        ("What happens if I miss a payment?", "What happesn if I miss a payment?"),  # "happen" is no other reading
    ],
)
def test_a_typo_with_one_reading_is_corrected(stored: str, asked: str) -> None:
    assert compare(stored, asked).same


def test_an_answer_to_an_offer_without_a_question_mark_is_never_small_talk() -> None:
    offer = ["user: I want Premium.", "assistant: I can upgrade you to Premium for $10 a month if you like."]
    for yes in ("Great, do it.", "Please do.", "Do it."):
        for no in ("I'm good, thanks.", "I'm all set.", "All good.", "Fine.", "Thanks."):
            assert not same_context(offer + [f"user: {yes}"], offer + [f"user: {no}"])


def test_thanks_after_the_assistants_statement_is_small_talk() -> None:
    statement = ["user: My parcel hasn't arrived.", "assistant: I can see parcel PX-310. It is due tomorrow."]
    for thanks in (["user: Perfect, thank you.", "assistant: Happy to help! What else can I do for you?"],
                   ["user: ok thanks", "assistant: No problem! Anything else?"]):  # fmt: skip
        assert same_context(statement, statement + thanks)


def test_thanks_after_an_offer_to_act_is_never_small_talk() -> None:
    for offer in ("I can add more storage in 1 TB blocks.", "I'll move you to express delivery.",
                  "Shall I book a courier for you?", "Let me know and I'd switch you to the annual plan."):  # fmt: skip
        stored = ["user: I need more space.", f"assistant: {offer}"]
        assert not same_context(stored, [*stored, "user: Great, thanks!", "assistant: You're welcome!"])
        assert not same_context([*stored, "user: Great, thanks!"], [*stored, "user: No thanks."])


def test_an_earlier_statement_the_stored_conversation_lacks_bears_on_the_answer() -> None:
    stored = ["user: Is there a fee?"]
    assert not same_context(stored, ["user: I'm a Gold member, by the way.", "assistant: Noted!", *stored])
    assert not same_context(stored, ["user: Please answer in French from now on.", "assistant: D'accord.", *stored])
    assert same_context(stored, ["user: Are you a real person?", "assistant: I'm a virtual assistant.", *stored])
