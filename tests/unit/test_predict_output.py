"""Where predict-adhoc's CSV goes (prefect.yaml) and which outputs are the model store itself."""

from __future__ import annotations

import pytest

from kubetrain.inference import InferenceError, refuse_model_store_output
from kubetrain.locations import SftpUrl, parse_location
from tests.kube_helpers import deployment_spec

STORE = "sftp://kubetrain@models.example.org:22/srv/kubetrain/models"


def test_predict_adhoc_uploads_to_the_sftp_server_beside_the_store() -> None:
    spec = deployment_spec("predict-adhoc")
    parameters = spec["parameters"]
    output = parse_location(parameters["output"], allow_http=False)
    source = parse_location(parameters["source"], allow_http=False)
    # Not the pod's file system (gone with the pod): the SFTP server the Secret trusts.
    assert isinstance(output, SftpUrl)
    assert isinstance(source, SftpUrl)
    assert (output.user, output.host, output.port) == (source.user, source.host, source.port)
    refuse_model_store_output(parameters["output"], parameters["source"], parameters["experiment"])
    assert "/tmp" not in spec["description"]
    assert "uploaded to the SFTP server" in " ".join(spec["description"].split())


@pytest.mark.parametrize(
    "output",
    [STORE, f"{STORE}/", f"{STORE}/letters", f"{STORE}/letters/", f"{STORE}/./letters/old"],
)
def test_the_model_store_or_its_experiment_is_refused(output: str) -> None:
    with pytest.raises(InferenceError, match="is the model store") as info:
        refuse_model_store_output(output, STORE, "letters")
    assert "models-predictions" in str(info.value)


@pytest.mark.parametrize(
    "output",
    [
        f"{STORE}-predictions",
        f"{STORE}/letters2",  # another experiment's name is not inside `letters`
        "sftp://kubetrain@other.example.org:22/srv/kubetrain/models",
        "sftp://kubetrain@models.example.org:2222/srv/kubetrain/models",
        "./predictions",
    ],
)
def test_other_places_are_accepted(output: str) -> None:
    refuse_model_store_output(output, STORE, "letters")
