"""Rowsmith's own checkov policies for Bicep (loaded with --external-checks-dir infra/policies).

checkov has no built-in check for some settings the keyless design depends on (shared key
access on storage, local auth on Application Insights and Log Analytics), and its built-in
checks pass when a setting is absent and the API default is insecure. These checks demand
the setting, written as a literal, on every resource of the type: a value that comes from
a parameter or an expression cannot be proven here and fails.

checkov imports every .py file in this folder by its bare file name, so names carry a
`rowsmith_` prefix to stay clear of other modules.
"""
