"""The position search attributes are named once (workflows/search_attributes.py); both registrations
(the operator service's, the dev server's flags) are derived from that list, so none can go missing."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType

from workers.temporal_client import CLI_SEARCH_ATTRIBUTES, SEARCH_ATTRIBUTES, cli_search_attribute_flags
from workflows import position
from workflows.search_attributes import SA_OPEN_QTY, SA_OPENED_AT, SA_STATUS
from workflows.search_attributes import SEARCH_ATTRIBUTES as KEYS


def test_every_key_is_registered_with_its_type() -> None:
    assert list(SEARCH_ATTRIBUTES) == [key.name for key in KEYS]
    assert SEARCH_ATTRIBUTES[SA_STATUS.name] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert SEARCH_ATTRIBUTES[SA_OPEN_QTY.name] == IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE
    assert SEARCH_ATTRIBUTES[SA_OPENED_AT.name] == IndexedValueType.INDEXED_VALUE_TYPE_DATETIME


def test_dev_server_flags_name_every_key_in_the_cli_spelling() -> None:
    flags = cli_search_attribute_flags()
    assert flags[::2] == ["--search-attribute"] * len(KEYS)
    assert flags[1::2] == [f"{key.name}={CLI_SEARCH_ATTRIBUTES[key.name]}" for key in KEYS]
    assert "PositionStatus=Keyword" in flags
    assert "OpenQty=Double" in flags
    assert "OpenedAt=Datetime" in flags


def test_the_position_module_still_offers_the_keys() -> None:
    assert position.SA_STATUS is SA_STATUS
    assert position.SEARCH_ATTRIBUTES is KEYS
