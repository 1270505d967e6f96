// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20Minimal {
    function decimals() external view returns (uint8);
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// Rain `Float` (rain.math.float): low 224 bits a signed coefficient, high 32 bits a signed
/// exponent; value = coefficient * 10^exponent. Carried as bytes32 in the ABI.
type Float is bytes32;

/// Rain's task structs, so the function selectors are the real ones.
struct EvaluableV4 {
    address interpreter;
    address store;
    bytes bytecode;
}

struct SignedContextV1 {
    address signer;
    bytes32[] context;
    bytes signature;
}

struct TaskV2 {
    EvaluableV4 evaluable;
    SignedContextV1[] signedContext;
}

/// @title OrderBookVault (simulation)
/// @notice The vault part of Rain's IRaindexV6 with the real signatures, `Float` encoding and
/// events: `vaultBalance2`, `deposit4`, `withdraw4`, `DepositV2`, `WithdrawV2` (V6 renamed
/// V5's `deposit3` / `withdraw3`, same arguments). Documented
/// simplifications: no orders (so `tasks` must be empty), balances kept as whole token units
/// (a deposit's Float must be a whole number of units, as the real order book's lossless
/// conversion requires), reverts carry strings instead of custom errors. `vaultBalance2`
/// returns the shortest encoding (trailing zeros stripped from the coefficient: 70 USDC is
/// `7e1`, not `70000000e-6`) so a client that reads the coefficient as units fails here too.
/// `simulateTake` lets the simulated venue play a taker filling the owner's order so vault
/// balances move as they would after a trade.
contract OrderBookVault {
    address public operator;
    mapping(address => mapping(address => mapping(bytes32 => uint256))) private balances;

    event DepositV2(address sender, address token, bytes32 vaultId, uint256 depositAmountUint256);
    event WithdrawV2(
        address sender,
        address token,
        bytes32 vaultId,
        Float targetAmount,
        Float withdrawAmount,
        uint256 withdrawAmountUint256
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

    function vaultBalance2(address owner, address token, bytes32 vaultId)
        external
        view
        returns (Float balance)
    {
        return _pack(balances[owner][token][vaultId], IERC20Minimal(token).decimals());
    }

    function deposit4(address token, bytes32 vaultId, Float depositAmount, TaskV2[] calldata tasks)
        external
    {
        require(tasks.length == 0, "Tasks are not supported by the simulated order book");
        uint256 amount = _toUnits(depositAmount, IERC20Minimal(token).decimals());
        require(amount != 0, "ZeroDepositAmount");
        require(
            IERC20Minimal(token).transferFrom(msg.sender, address(this), amount),
            "Transfer operation failed"
        );
        balances[msg.sender][token][vaultId] += amount;
        emit DepositV2(msg.sender, token, vaultId, amount);
    }

    /// @notice Withdraws min(targetAmount, balance); a zero target is rejected.
    function withdraw4(address token, bytes32 vaultId, Float targetAmount, TaskV2[] calldata tasks)
        external
    {
        require(tasks.length == 0, "Tasks are not supported by the simulated order book");
        uint8 decimals = IERC20Minimal(token).decimals();
        uint256 target = _toUnits(targetAmount, decimals);
        require(target != 0, "ZeroWithdrawTargetAmount");
        uint256 balance = balances[msg.sender][token][vaultId];
        uint256 amount = target < balance ? target : balance;
        if (amount > 0) {
            balances[msg.sender][token][vaultId] = balance - amount;
            require(IERC20Minimal(token).transfer(msg.sender, amount), "Transfer operation failed");
        }
        emit WithdrawV2(msg.sender, token, vaultId, targetAmount, _pack(amount, decimals), amount);
    }

    /// @notice Simulation only: the operator takes the owner's order. The operator pays
    /// `inputAmount` of `inputToken` into the owner's vault and receives `outputAmount` of
    /// `outputToken` out of it (the owner sells output for input). Amounts in token units.
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

    // -- Float (LibDecimalFloat's packLossless / unpack / toFixedDecimalLossless) -------------

    function _unpack(Float value) internal pure returns (int256 coefficient, int256 exponent) {
        uint256 word = uint256(Float.unwrap(value));
        coefficient = int256(int224(uint224(word)));
        exponent = int256(int32(uint32(word >> 224)));
    }

    /// Whole token units of a Float; reverts if negative, fractional or beyond uint256.
    function _toUnits(Float value, uint8 decimals) internal pure returns (uint256) {
        (int256 coefficient, int256 exponent) = _unpack(value);
        require(coefficient >= 0, "NegativeFixedDecimalConversion");
        if (coefficient == 0) return 0;
        uint256 units = uint256(coefficient);
        int256 shift = exponent + int256(uint256(decimals));
        if (shift >= 0) {
            require(shift <= 77, "ExponentOverflow");
            return units * 10 ** uint256(shift); // checked: overflow reverts
        }
        require(shift >= -77, "LossyConversionFromFloat");
        uint256 scale = 10 ** uint256(-shift);
        require(units % scale == 0, "LossyConversionFromFloat");
        return units / scale;
    }

    /// Token units as a Float, trailing zeros of the coefficient moved into the exponent.
    function _pack(uint256 units, uint8 decimals) internal pure returns (Float) {
        int256 exponent = -int256(uint256(decimals));
        if (units == 0) return Float.wrap(bytes32(0));
        while (units % 10 == 0) {
            units /= 10;
            exponent += 1;
        }
        require(units <= uint256(uint224(type(int224).max)), "CoefficientOverflow");
        uint256 word = units | (uint256(uint32(int32(exponent))) << 224);
        return Float.wrap(bytes32(word));
    }
}
