"""The reuse guard: look-alike questions that differ must never share an answer."""

from __future__ import annotations

import pytest

from budget.reuse.compare import same_question

BASE = "Sophie has 5 apples and buys 3 more. How many apples does she have?"


@pytest.mark.parametrize(
    "variant",
    [
        "Sophie has 6 apples and buys 3 more. How many apples does she have?",  # other numbers (S3)
        "Liam has 5 apples and buys 3 more. How many apples does he have?",  # other names
        "Sophie has 5 pears and buys 3 more. How many pears does she have?",  # other units
        "Sophie has 5 apples and sells 3. How many apples does she have?",  # other direction
        "Sophie has 3 apples and buys 5 more. How many apples does she have?",  # numbers swapped
        "Sophie has 5 apples and buys 3 more. How many apples does she not have?",  # negation
        "Sophie has five apples and buys four more. How many apples does she have?",  # number words
    ],
)
def test_look_alike_question_is_not_the_same_question(variant: str) -> None:
    assert not same_question(BASE, variant)


@pytest.mark.parametrize(
    "variant",
    [
        BASE,
        "  sophie has 5 apples and buys 3 more.   how many apples does she have ",  # case and spacing
        "Quick question: Sophie has 5 apples and buys 3 more. What is the number of apples she has? Thanks!",
        "Here is a word problem: Sophie has 5 apples and purchases 3 more. How many apples does she have?",
        "Sophie has five apples and buys three more. How many apples does she have?",
    ],
)
def test_reworded_question_with_same_numbers_and_names_is_the_same(variant: str) -> None:
    assert same_question(BASE, variant)


def test_reversed_comparison_is_not_the_same_question() -> None:
    assert not same_question("Is Paris bigger than Rome?", "Is Rome bigger than Paris?")


def test_money_and_decimals_are_compared_as_numbers() -> None:
    assert same_question("Tom pays $12.50 for 2 books. Cost per book?", "Tom pays $12.5 for 2 books. Cost per book?")
    assert not same_question("Tom pays $12.50 for 2 books. Cost per book?", "Tom pays $12.75 for 2 books. Cost?")


@pytest.mark.parametrize(
    "text",
    ["Booking HX4821 for 14 to 16 June", "Order #A12-77b, 3x", "Is 1,5 kg over 1,200 g?", "Flight BA2490 at 10:30",
     "Code x9y8z7 and -20 and $5.55 and £3"],
)  # fmt: skip
def test_no_digit_is_ever_folded_away(text: str) -> None:
    import re

    from budget.reuse.text import fold

    folded = "".join(fold(text).tokens)
    assert "".join(re.findall(r"\d", text)) == "".join(re.findall(r"\d", folded))
