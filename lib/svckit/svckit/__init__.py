"""svckit: the one copy of the code every service needs.

Each Chalice app imports it like any other package. Locally it is installed (editable) into the
project virtualenv; for Lambda the build copies it into the app's ``vendor/`` folder, which
Chalice puts at the root of the deployment zip. It is never copied by hand.
"""
