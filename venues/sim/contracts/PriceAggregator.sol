// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// A minimal Chainlink-style price feed (AggregatorV3Interface's reads) for the simulated
/// venue: the deployer sets the answer, each update opens a new round.
contract PriceAggregator {
    address public immutable owner;
    uint8 public immutable decimals;
    string public description;
    uint80 private round;
    int256 private answer;
    uint256 private updatedAt;

    constructor(uint8 decimals_, string memory description_, int256 initialAnswer) {
        owner = msg.sender;
        decimals = decimals_;
        description = description_;
        _set(initialAnswer);
    }

    function version() external pure returns (uint256) {
        return 4;
    }

    function setAnswer(int256 newAnswer) external {
        require(msg.sender == owner, "only owner");
        _set(newAnswer);
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer_, uint256 startedAt, uint256 updatedAt_, uint80 answeredInRound)
    {
        return (round, answer, updatedAt, updatedAt, round);
    }

    function _set(int256 newAnswer) private {
        require(newAnswer > 0, "answer must be positive");
        round += 1;
        answer = newAnswer;
        updatedAt = block.timestamp;
    }
}
