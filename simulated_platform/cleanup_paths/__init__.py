"""The paths of Trinity's cleanup cycle, one module each; :mod:`..platform_cleanup` runs them."""
