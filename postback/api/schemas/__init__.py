"""What the API answers: one pydantic model per shape, declared on every route
(``response_model=``), so ``/openapi.json`` documents each answer exactly and the answers are
checked against it (``tests/test_schemathesis.py``).

The models describe the dicts the services build, field for field and in their order:
``extra="forbid"`` makes a field a service adds without its model an error in the tests
instead of an answer that silently loses it. A key that is only sometimes there is typed
``| MISSING`` (left out of the answer when absent, never sent as null); a nullable one is
``| None``. Money is a decimal string, times ISO 8601 strings in UTC.
"""
