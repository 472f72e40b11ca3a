"""evaluation_sampler: nothing to do on one process; a clear error when there are fewer rows than ranks.
(The sharding itself under 2 processes: tests/distributed, where every test counts the scored rows.)"""

import pytest

from vlkit.data import sharding
from vlkit.errors import ConfigError


def test_one_process_keeps_the_loaders_own_order():
    assert sharding.world_size() == 1
    assert sharding.evaluation_sampler(list(range(5))) is None


def test_fewer_rows_than_ranks_is_a_config_error(monkeypatch):
    monkeypatch.setattr(sharding, "world_size", lambda: 3)
    with pytest.raises(ConfigError, match="at least one row per rank: got 2 rows for 3 ranks") as err:
        sharding.evaluation_sampler([0, 1])
    assert err.value.argument == "devices"
