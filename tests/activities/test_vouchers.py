"""A worker vouches only for the grants its own start_positions started positions with, each once."""

from __future__ import annotations

from decimal import Decimal

from activities.vouchers import GrantVouchers


def test_a_grant_is_vouched_for_once_and_only_where_it_was_started() -> None:
    here, elsewhere = GrantVouchers(), GrantVouchers()
    here.vouch("position-a", Decimal(100))
    assert elsewhere.redeem("position-a") is None  # another worker: the position asks the portfolio
    assert here.redeem("position-typed-in") is None
    assert here.redeem("position-a") == Decimal(100)
    assert here.redeem("position-a") is None  # once: a second run of that id is not vouched for


def test_a_start_that_failed_is_forgotten_and_unredeemed_grants_expire() -> None:
    vouchers = GrantVouchers()
    vouchers.vouch("position-ran-before", Decimal(50))
    vouchers.forget("position-ran-before")
    assert vouchers.redeem("position-ran-before") is None
    expiring = GrantVouchers(ttl_s=0.0)
    expiring.vouch("position-never-started", Decimal(50))
    expiring.vouch("position-b", Decimal(70))  # each vouch drops the expired ones
    assert expiring.redeem("position-never-started") is None
