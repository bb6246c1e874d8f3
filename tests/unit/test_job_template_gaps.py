"""check_job_variables on templates the committed one does not exercise (found by mutation
testing): a schema without properties, and errors about the variables object as a whole."""

from __future__ import annotations

import pytest

from kubetrain.k8s.template import WorkPoolError, check_job_variables


def test_a_template_without_variable_properties_refuses_any_job_variable() -> None:
    template = {"job_configuration": {}, "variables": {"type": "object"}}
    with pytest.raises(WorkPoolError, match=r"^job variables \['cpu'\] are not defined .*: \[\]$"):
        check_job_variables(template, {"cpu": "1"})
    check_job_variables(template, {})  # nothing to check: fine


def test_an_error_about_the_whole_variables_object_is_labelled_root() -> None:
    template = {
        "variables": {
            "type": "object",
            "properties": {"image": {"type": "string"}, "cpu": {"type": "string"}},
            "required": ["image"],
        }
    }
    with pytest.raises(WorkPoolError) as raised:
        check_job_variables(template, {"cpu": 2})
    assert str(raised.value).splitlines() == [
        "invalid job variables:",
        "  job variable <root>: 'image' is a required property",
        "  job variable cpu: 2 is not of type 'string'",
    ]
