"""A user module that exists but imports a package that is not installed (``imports=[needs_missing_package]``)."""

import rlexp_test_package_that_is_not_installed  # noqa: F401
