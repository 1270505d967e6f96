// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20Minimal {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title OrderBookVault (simulation)
/// @notice The vault subset of Rain's IOrderBookV5 that the rebalancer uses. Documented
/// simplifications: amounts are plain fixed-point uint256 in the token's own decimals instead
/// of rain-math-float `Float`, the `tasks` argument is dropped, and there are no orders, only
/// vault balances keyed by (owner, token, vaultId). `simulateTake` lets the simulated venue
/// play a taker filling the owner's order so vault balances move as they would after a trade.
contract OrderBookVault {
    address public operator;
    mapping(address => mapping(address => mapping(bytes32 => uint256))) private balances;

    event Deposit(address indexed sender, address indexed token, bytes32 indexed vaultId, uint256 amount);
    event Withdraw(
        address indexed sender,
        address indexed token,
        bytes32 indexed vaultId,
        uint256 targetAmount,
        uint256 amount
    );
    event SimulatedTake(
        address indexed owner,
        bytes32 indexed vaultId,
        address inputToken,
        uint256 inputAmount,
        address outputToken,
        uint256 outputAmount
    );

    constructor() {
        operator = msg.sender;
    }

    function vaultBalance(address owner, address token, bytes32 vaultId)
        external
        view
        returns (uint256)
    {
        return balances[owner][token][vaultId];
    }

    function deposit3(address token, bytes32 vaultId, uint256 depositAmount) external {
        require(depositAmount != 0, "ZeroDepositAmount");
        require(
            IERC20Minimal(token).transferFrom(msg.sender, address(this), depositAmount),
            "Transfer operation failed"
        );
        balances[msg.sender][token][vaultId] += depositAmount;
        emit Deposit(msg.sender, token, vaultId, depositAmount);
    }

    /// @notice Withdraws min(targetAmount, balance); a zero target is rejected.
    function withdraw3(address token, bytes32 vaultId, uint256 targetAmount) external {
        require(targetAmount != 0, "ZeroWithdrawTargetAmount");
        uint256 balance = balances[msg.sender][token][vaultId];
        uint256 amount = targetAmount < balance ? targetAmount : balance;
        if (amount > 0) {
            balances[msg.sender][token][vaultId] = balance - amount;
            require(IERC20Minimal(token).transfer(msg.sender, amount), "Transfer operation failed");
        }
        emit Withdraw(msg.sender, token, vaultId, targetAmount, amount);
    }

    /// @notice Simulation only: the operator takes the owner's order. The operator pays
    /// `inputAmount` of `inputToken` into the owner's vault and receives `outputAmount` of
    /// `outputToken` out of it (the owner sells output for input).
    function simulateTake(
        address owner,
        bytes32 vaultId,
        address inputToken,
        uint256 inputAmount,
        address outputToken,
        uint256 outputAmount
    ) external {
        require(msg.sender == operator, "Caller is not the operator");
        uint256 outputBalance = balances[owner][outputToken][vaultId];
        require(outputBalance >= outputAmount, "Insufficient vault balance");
        if (inputAmount > 0) {
            require(
                IERC20Minimal(inputToken).transferFrom(msg.sender, address(this), inputAmount),
                "Transfer operation failed"
            );
            balances[owner][inputToken][vaultId] += inputAmount;
        }
        if (outputAmount > 0) {
            balances[owner][outputToken][vaultId] = outputBalance - outputAmount;
            require(IERC20Minimal(outputToken).transfer(msg.sender, outputAmount), "Transfer operation failed");
        }
        emit SimulatedTake(owner, vaultId, inputToken, inputAmount, outputToken, outputAmount);
    }
}
