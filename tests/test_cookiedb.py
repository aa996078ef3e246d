"""The shipped Open Cookie Database: exact names, wildcard prefixes, unknown names."""

import pytest

from consent.cookiedb import look_up_cookie


@pytest.mark.parametrize(
    ("name", "platform", "purpose"),
    [
        ("_ga", "Google Analytics", "analytics"),
        ("_ga_ABC123XYZ", "Google Analytics", "analytics"),  # wildcard `_ga_`
        ("_pk_id.1.1fff", "Piwik", "analytics"),  # longest wildcard: `_pk_id.`
        ("_gid", "Google Analytics", "analytics"),
    ],
)
def test_known_cookie_is_named_and_classified(name, platform, purpose):
    found = look_up_cookie(name)
    assert (found.platform, found.purpose) == (platform, purpose)


def test_exact_name_is_not_matched_as_a_prefix_of_longer_names():
    # `_gali` is an exact row; `_galiXYZ` must not borrow it.
    assert look_up_cookie("_gali").name == "_gali"
    found = look_up_cookie("_galiXYZ")
    assert found is None or found.name != "_gali"


def test_unknown_name_is_none():
    assert look_up_cookie("shop_cart_7f3a") is None
