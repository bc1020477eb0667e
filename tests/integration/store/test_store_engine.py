"""The engine's own settings, against a real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

pytestmark = pytest.mark.integration


async def test_a_database_error_does_not_carry_its_statements_parameters(engine):
    # Unexpected errors are logged with their text; the parameters of mailwatch's
    # statements include sealed credentials and mailbox addresses.
    secret = "sealed-credential-7f3a"
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError) as caught:
            await connection.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": secret})
    assert "division by zero" in str(caught.value)
    assert secret not in str(caught.value)
