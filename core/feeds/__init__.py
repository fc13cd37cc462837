"""Feed intake: fetch, parse, cursor."""
